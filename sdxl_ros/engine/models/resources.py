# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""Find the bundled `resource/` folder, from the source tree or the installed ROS package."""

from pathlib import Path


def resource_dir():
    """
    Return the `resource` directory: next to the sources first, else the ament share dir.

    Running from the repository (tests, `python -m sdxl_ros.engine`) finds
    `<repo>/resource`; an installed package finds `share/sdxl_ros/resource` through
    ament_index_python when that (optional) ROS module is importable.
    """
    here = Path(__file__).resolve()
    candidates = [here.parents[3] / 'resource']
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory('sdxl_ros')) / 'resource')
    except Exception:  # noqa: BLE001 - not a ROS install, or the package is not installed
        pass
    for candidate in candidates:
        if (candidate / 'models').is_dir():
            return candidate
    raise FileNotFoundError(
        'sdxl_ros resource folder not found (looked in: '
        + ', '.join(str(c) for c in candidates) + '); reinstall the package')


def model_config_dir(name):
    """Return the bundled diffusers-layout config folder `resource/models/<name>`."""
    path = resource_dir() / 'models' / name
    if not (path / 'model_index.json').is_file():
        raise FileNotFoundError(f'bundled model config {name!r} missing at {path}')
    return path
