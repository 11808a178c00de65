"""Why residual networks train, measured: the paper's experiments (degradation, shortcut options), gradient
flow, the lesion (ensemble) view and Grad-CAM, each with figures and the numbers behind them."""
