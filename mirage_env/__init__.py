"""mirage-env: a Gymnasium environment whose frames come from a video world model with a latent 3D memory."""

__version__ = "0.1.0"
