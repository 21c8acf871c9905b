"""LMSYS Chatbot Arena human preference prediction."""
__version__ = "0.1.0"
