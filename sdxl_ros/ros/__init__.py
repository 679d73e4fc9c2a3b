# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""
The ROS 2 layer: everything that imports rclpy or ROS messages, and nothing that imports torch.

`node` is the GenerateImage action server; the other modules translate between ROS messages
and the engine's vocabulary (goals, images, parameters) and hold the node's policies (queue,
model listing). Importing this package loads nothing: import the module you need.
"""
