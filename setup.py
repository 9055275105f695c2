"""zoobot-tf: galaxy morphology foundation models in TensorFlow/Keras 3.

Dependencies are ranges: the lower bounds are versions the test suite ran on (the exact set CI installs
is requirements.txt; the wheel test in tests/test_wheel.py also installs the package next to the older
numpy/pandas/scipy/pyarrow/pillow listed in .ci/older-versions.txt); upper bounds only where a break is
known. The wheel carries the TFDS builders (zoobot_tf/tfds) and the embedded model (the repository's
saved_models/, as the package zoobot_tf.saved_models: its Keras file, metadata and model card).
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "zoobot_tf" / "__init__.py").read_text(), re.M).group(1)

INSTALL_REQUIRES = [
    "tensorflow>=2.21",  # the full wheel: tensorflow-cpu plus tf-keras pulls a second TensorFlow in
    "keras>=3.15.1",
    "tf-keras>=2.21",  # only because tensorflow-probability imports it
    "tensorflow-probability[tf]>=0.25",
    "keras-cv>=0.9",
    "tensorflow-datasets>=4.9.10",
    "importlib_resources>=6",  # tensorflow-datasets imports it without declaring it
    "tensorboard>=2.21",
    "tensorflow-serving-api>=2.21",  # warmup requests in every export
    "protobuf>=6.31.1",
    "numpy>=2.2",
    "pandas>=2.2",
    "scipy>=1.14",
    "h5py>=3.12",
    "pyarrow>=18",
    "pillow>=11",
    "matplotlib>=3.9",
    "tqdm>=4.66",
    "PyYAML>=6",
    "absl-py>=2",
    "safetensors>=0.4",
    "scikit-learn>=1.5",
]

EXTRAS = {
    "fits": ["astropy>=6"],
    "hub": ["huggingface_hub>=0.25"],
    "beam": ["apache-beam>=2.77"],
    "search": ["faiss-cpu>=1.9"],
    "docs": ["mkdocs-material>=9.5", "mkdocstrings-python>=1.10", "mkdocs-jupyter>=0.25", "jupytext>=1.16",
             "nbclient>=0.10", "ipykernel>=6"],
    "dev": ["pytest>=8", "pytest-xdist>=3", "astropy>=6", "dill>=0.3", "huggingface_hub>=0.25", "build>=1", "psutil>=5.9",
            "playwright>=1.40"],
}

setup(
    name="zoobot-tf",
    version=VERSION,
    description="Galaxy Zoo foundation models (Zoobot) for TensorFlow and Keras 3",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["zoobot_tf", "zoobot_tf.*"]) + ["zoobot_tf.saved_models"],
    package_dir={"zoobot_tf.saved_models": "saved_models"},
    package_data={
        "zoobot_tf.saved_models": ["*.md", "*/*.md", "*/*.json", "*/*/assets.extra/model.keras",
                                   "*/*/assets.extra/zoobot_metadata.json"],
    },
    include_package_data=False,
    install_requires=INSTALL_REQUIRES,
    extras_require={**EXTRAS, "all": sorted({r for rs in EXTRAS.values() for r in rs})},
    entry_points={"console_scripts": ["zoobot-tf=zoobot_tf.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Astronomy",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
