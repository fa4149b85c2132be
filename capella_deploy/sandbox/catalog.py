"""What the sandbox offers: catalog models, cloud providers, regions and compute sizes.

The real catalog is larger and changes over time; these entries cover every model kind the Management API
names (text-generation, embedding-generation, moderation, prompt-injection) with the vendors and vector
dimensions the documentation shows.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT_GENERATION = "text-generation"
EMBEDDING_GENERATION = "embedding-generation"
MODERATION = "moderation"
PROMPT_INJECTION = "prompt-injection"
MODEL_KINDS = (TEXT_GENERATION, EMBEDDING_GENERATION, MODERATION, PROMPT_INJECTION)


@dataclass(frozen=True)
class CatalogModel:
    name: str
    kind: str
    vendor: str  # what the Management API reports as config.provider
    dimensions: int | None = None  # embedding models only: the vector length they produce by default
    context_tokens: int = 8192


CATALOG: dict[str, CatalogModel] = {
    m.name: m
    for m in (
        CatalogModel("mistralai/mistral-7b-instruct-v0.3", TEXT_GENERATION, "mistral", context_tokens=32768),
        CatalogModel("meta-llama/Llama-3.1-8B-Instruct", TEXT_GENERATION, "meta", context_tokens=131072),
        CatalogModel("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", TEXT_GENERATION, "deepseek"),
        CatalogModel("nvidia/llama-3.2-nv-embedqa-1b-v2", EMBEDDING_GENERATION, "nvidia", dimensions=2048),
        CatalogModel("intfloat/e5-mistral-7b-instruct", EMBEDDING_GENERATION, "intfloat", dimensions=4096),
        CatalogModel("nvidia/llama-3.1-nemoguard-8b-content-safety", MODERATION, "nvidia"),
        CatalogModel("meta-llama/Llama-Guard-3-8B", MODERATION, "meta"),
        CatalogModel("nvidia/nemoguard-jailbreak-detect", PROMPT_INJECTION, "nvidia"),
    )
}

CLOUD_PROVIDERS = ("aws", "gcp", "azure")
OFFERED_PROVIDERS = ("aws",)  # the documentation: "Currently only AWS is supported"
REGIONS = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1")
CPU_CHOICES = (4, 32)
GPU_MEMORY_CHOICES = (24, 48, 192)
QUANTIZATIONS = ("fp8", "fp16", "fullPrecision")
OPTIMIZATIONS = ("throughput", "latency")
