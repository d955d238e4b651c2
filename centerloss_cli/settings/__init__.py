"""The settings: how each is declared once (schema.py) and which there are (config.py), the command line's
options made from them (options.py), the device and precision a run computes in and what the machine bounds
(devices.py), and the voice that names settings as the caller gives them (voice.py). Keys and flags exist only
at these edges; inside, every module reads a setting by its field name (config.lam)."""
