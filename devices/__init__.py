"""Byte transports."""
