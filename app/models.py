"""Every ORM model, imported in one place so the metadata is complete (Alembic, tests)."""

from app.catalogues.models import Catalogue, LicenseTerms, Segment, Track
from app.db import Base
from app.orgs.models import ApiKey, Organisation

__all__ = ["ApiKey", "Base", "Catalogue", "LicenseTerms", "Organisation", "Segment", "Track"]
