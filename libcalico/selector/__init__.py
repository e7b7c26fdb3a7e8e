"""Calico's selector language. See :mod:`libcalico.selector.parsing` for the grammar."""

from libcalico.selector.parsing import Selector, SelectorError, parse, valid_label, validate

__all__ = ["Selector", "SelectorError", "parse", "valid_label", "validate"]
