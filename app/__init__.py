"""Echoledger: licensing service for AI training data on music catalogues."""
