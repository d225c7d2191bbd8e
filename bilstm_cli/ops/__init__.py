"""What the tool does with a model: inspect, plan and apply changes, compare."""
