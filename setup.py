import os
from glob import glob

from setuptools import find_packages, setup

package_name = "latent_vs"


def tree(src, dst_root):
    """data_files entries that install every file under `src` into share/<pkg>/<src>."""
    out = []
    for root, _dirs, files in os.walk(src):
        if files:
            out.append((os.path.join(dst_root, root), [os.path.join(root, f) for f in files]))
    return out


share = os.path.join("share", package_name)
setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={package_name: ["data/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        (share, ["package.xml"]),
        (os.path.join(share, "launch"), glob("launch/*.launch.py")),
        (os.path.join(share, "config"), glob("config/*.yaml") + glob("config/*.pt")),
    ] + tree("models", share) + tree("worlds", share),
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="latent_vs maintainers",
    maintainer_email="latent-vs@example.org",
    description="Visual servoing by control in a learned latent space",
    license="BSD-3-Clause",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "latent-vs = latent_vs.cli:main",
            "encoder_node = latent_vs.ros.encoder_node:main",
            "controller_node = latent_vs.ros.controller_node:main",
            "sim_camera_node = latent_vs.ros.sim_camera_node:main",
        ],
    },
)
