"""zoobot-tf: galaxy morphology foundation models in TensorFlow/Keras 3."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements():
    """Core install requirements: requirements.txt minus the test/extra tools listed below."""
    extras_only = {"astropy", "huggingface_hub", "pytest", "pytest-xdist", "dill"}
    reqs = []
    for line in (HERE / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and line.split("==")[0].split("[")[0].lower() not in extras_only:
            reqs.append(line)
    return reqs


setup(
    name="zoobot-tf",
    version="0.1.0",
    description="Galaxy Zoo foundation models (Zoobot) for TensorFlow and Keras 3",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["zoobot_tf", "zoobot_tf.*"]),
    include_package_data=True,
    package_data={"zoobot_tf": ["schemas_data/*.yaml"]},
    install_requires=read_requirements(),
    extras_require={
        "fits": ["astropy==8.0.2"],
        "serving": ["tensorflow-serving-api==2.21.0", "requests"],
        "hub": ["huggingface_hub==2.4.0"],
        "dev": ["pytest==9.2.0", "pytest-xdist==3.8.0", "astropy==8.0.2", "dill==0.4.1", "huggingface_hub==2.4.0"],
    },
    entry_points={"console_scripts": ["zoobot-tf=zoobot_tf.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Astronomy",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
