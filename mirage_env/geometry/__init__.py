"""Cameras, poses, trajectories and camera-file readers (OpenCV convention, camera-to-world poses)."""

from mirage_env.geometry.camera import (
    backproject_depth,
    camera_rays,
    intrinsics_from_fov,
    invert_pose,
    pack_cameras,
    pixel_grid,
    project_points,
    scale_intrinsics,
)
from mirage_env.geometry.checks import check_intrinsics, check_poses
from mirage_env.geometry.poses import (
    euler_from_rotation,
    integrate_velocity,
    look_at,
    pose_from_euler,
    rotation_from_euler,
)

__all__ = [
    "backproject_depth",
    "camera_rays",
    "check_intrinsics",
    "check_poses",
    "euler_from_rotation",
    "integrate_velocity",
    "intrinsics_from_fov",
    "invert_pose",
    "look_at",
    "pack_cameras",
    "pixel_grid",
    "pose_from_euler",
    "project_points",
    "rotation_from_euler",
    "scale_intrinsics",
]
