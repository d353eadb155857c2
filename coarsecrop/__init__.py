"""coarsecrop: coarse object crops as pseudo object-centric images for SSL on scene images.

The flow runs one way: data -> crops -> ssl/train -> evaluate -> runs -> book.
"""

__version__ = "0.1.0"
