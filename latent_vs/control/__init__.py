"""Control laws (pure Python, no ROS). See base.py for the one interface they all share."""
