"""ftcal_jax: "Fine-Tuning is Fine, if Calibrated" (Mai et al., NeurIPS 2024) in JAX/Flax."""

import os
import runpy

import setuptools

# Fonts that the offline Glyphs benchmark renders. Printed faces are the source
# domain, handwriting faces (drawn as outlines) are the target domain. The one
# list lies in the package; it is read by path, since the package's
# dependencies are not installed when setup.py runs.
_FONTS = runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "ftcal_jax", "datasets", "font_packages.py"))
PRINTED_FONTS = list(_FONTS["PRINTED_PACKAGES"])
HANDWRITING_FONTS = list(_FONTS["HANDWRITING_PACKAGES"])

INSTALL_REQUIRES = [
    "jax>=0.10",
    "flax>=0.12",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "tensorflow-datasets>=4.9.9",
    "ml-collections>=1.0",
    "numpy>=1.26",
    "clu>=0.0.12",
    # clu imports these without declaring them.
    "tensorflow-cpu>=2.18",
    "tensorboard>=2.18",
    # tensorflow-datasets needs it to prepare custom builders.
    "importlib_resources",
    "array_record>=0.7",
    "absl-py",
    "pillow>=10",
    "fonttools>=4.50",
    "matplotlib>=3.8",
    "hershey-fonts>=2.1",
    "safetensors>=0.4",
] + [f"fontpkg-{name}" for name in PRINTED_FONTS + HANDWRITING_FONTS]

TEST_REQUIRES = [
    "pytest>=8",
    "hypothesis>=6.100",
    "chex>=0.1.90",
    # The one formatter (config .style.yapf), checked by tests/test_format.py.
    "yapf==0.43.0",
    # The reference ViT for parity tests. torch==2.13.0 is the CPU build that
    # lies on the project's machines; elsewhere add
    # --extra-index-url https://download.pytorch.org/whl/cpu to avoid CUDA.
    "torch==2.13.0",
    "transformers>=5.0",
    # Executes the Colab notebooks in CI.
    "nbclient>=0.10",
    "nbformat>=5.10",
    "ipykernel>=6.29",
]

setuptools.setup(
    name="ftcal_jax",
    version="0.1.0",
    description="Fine-Tuning is Fine, if Calibrated: post-hoc logit calibration for fine-tuned classifiers, in JAX.",
    packages=setuptools.find_packages(include=["ftcal_jax", "ftcal_jax.*"]),
    package_data={"ftcal_jax": ["assets/*"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
)
