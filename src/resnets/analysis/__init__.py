"""Analysis tools: Grad-CAM (and, later, the paper's experiments)."""
