from models_numpy.device import configure

__all__ = ["configure"]
