"""posbridge: ECR bridge, virtual terminal and technician's console for bank card terminals."""

__version__ = "0.1.0"
