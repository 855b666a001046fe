"""pfm: PHP-FPM for Python. A FastCGI process manager for WSGI applications."""

__version__ = "0.1.0"
