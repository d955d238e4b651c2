"""The choices the numerics understand, by name, without importing torch: settings/config.py offers them as
settings, and the command line checks them before anything heavy is loaded."""

CENTER_UPDATES = ("paper", "sgd", "caffe")  # center_loss.move_centers says what each does
NETS = ("official", "table1")  # the official Caffe prototxt, and the paper's Table 1 (model.py)
