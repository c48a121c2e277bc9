"""diffcut-gpu: GPU-native recursive random-walk Normalized Cuts for zero-shot segmentation."""

from setuptools import setup

PACKAGES = [
    "diffcut_gpu",
    "diffcut_gpu.spectral",
    "diffcut_gpu.kernels",
    "diffcut_gpu.attention",
    "diffcut_gpu.models",
    "diffcut_gpu.modules",
    "diffcut_gpu.upsample",
    "diffcut_gpu.eval",
    "diffcut_gpu.cli",
    "diffcut_gpu.baselines",
    "diffcut_gpu.io",
    "diffcut_gpu.csrc",
]

setup(
    name="diffcut-gpu",
    version="0.1.0",
    description="Batched random-walk Normalized Cuts on diffusion / ViT attention for zero-shot segmentation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    # CUDA sources live in the top-level csrc/ and ship as package data of diffcut_gpu.csrc,
    # so the kernel loader finds them the same way in a checkout and in an installed wheel.
    package_dir={"diffcut_gpu.csrc": "csrc"},
    package_data={"diffcut_gpu.csrc": ["*.cu", "*.cuh"], "diffcut_gpu.models": ["configs/*.json"]},
    # A range, not a bare name: an installed torch (CPU or CUDA) satisfies it and nothing is re-resolved.
    install_requires=["torch>=2.1", "numpy>=1.24", "scipy>=1.10", "pillow>=9", "tqdm>=4.60"],
    extras_require={
        "diffusers": ["diffusers>=0.30", "transformers>=4.40", "safetensors"],
        "vit": ["transformers>=4.40", "safetensors"],
        "plot": ["matplotlib>=3.6"],
        "cuda12": ["cupy-cuda12x>=13"],
        "cuda13": ["cupy-cuda13x>=14"],
        "test": ["pytest>=7", "scikit-image>=0.21", "matplotlib>=3.6", "ruff"],
    },
    entry_points={"console_scripts": ["diffcut-gpu=diffcut_gpu.cli.main:main"]},
)
