"""ROS 2 layer of moge2_ros: the only sub-package that imports rclpy and the ROS message packages.

* :mod:`.conversions`: pure functions between ``sensor_msgs`` messages and numpy arrays (decode input images
  and CameraInfo, pack depth, mask, normals, colourised depth and point clouds); bad input raises
  :class:`moge2_ros.ros.conversions.ConversionError`.
* :mod:`.stats` and :mod:`.host_memory`: the node's frame statistics and heap setting; they import no ROS
  package, so they are tested without rclpy.

Nothing is imported here, so importing a sub-module does not pull in the others.
"""
