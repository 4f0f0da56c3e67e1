"""Reactions of the registry to other services' events.

None yet: the registry is the first service. Later, the supervision service's
``TaskAgreementTookEffect`` and ``ProjectTerminated`` events will become
``MarkTransferred`` and ``ReturnFunction`` commands here, and capability's
recommendations will gate ``AssignFunction``.
"""
