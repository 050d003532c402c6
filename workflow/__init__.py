"""Workflow definitions: which transition leads where, and who may make it.

These modules hold state machines only; they do no I/O and know nothing of
the store. The caller tells who the actor is to the object (its roles) and
gets back the state to record, or TransitionRefused saying why not.
"""

from workflow.rules import Role, TransitionRefused

__all__ = ["Role", "TransitionRefused"]
