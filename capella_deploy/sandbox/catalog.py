"""What the sandbox offers: the tool's own catalog (capella_deploy/catalog), so that the sandbox refuses
exactly what the tool's catalog check reports; and the API's enums, which are vocabulary, not offerings.
"""

from __future__ import annotations

from collections.abc import Mapping

from capella_deploy.catalog import CATALOG as OFFERED
from capella_deploy.catalog import (
    EMBEDDING_GENERATION,
    MODEL_KINDS,
    MODERATION,
    PROMPT_INJECTION,
    TEXT_GENERATION,
    CatalogModel,
)

__all__ = [
    "CATALOG",
    "CLOUD_PROVIDERS",
    "CPU_CHOICES",
    "EMBEDDING_GENERATION",
    "GPU_MEMORY_CHOICES",
    "MODEL_KINDS",
    "MODERATION",
    "OFFERED_PROVIDERS",
    "OPTIMIZATIONS",
    "PROMPT_INJECTION",
    "QUANTIZATIONS",
    "REGIONS",
    "TEXT_GENERATION",
    "CatalogModel",
]

CATALOG: Mapping[str, CatalogModel] = OFFERED.models
OFFERED_PROVIDERS = OFFERED.providers
REGIONS = OFFERED.regions
CPU_CHOICES = OFFERED.cpu
GPU_MEMORY_CHOICES = OFFERED.gpu_memory

# The create body's enums: a value outside them is malformed, whatever is offered.
CLOUD_PROVIDERS = ("aws", "gcp", "azure")
QUANTIZATIONS = ("fp8", "fp16", "fullPrecision")
OPTIMIZATIONS = ("throughput", "latency")
