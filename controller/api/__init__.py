"""The HTTP surface: FastAPI app, ingestion (validation + Ingestor), serving of the champion."""
