"""The HTTP surface: the FastAPI app, its route table and views (routes/), admission, ingestion (validation +
Ingestor), serving of the champion."""
