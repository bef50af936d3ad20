"""The two ways a FHIR search or export is refused, both 400 with an OperationOutcome
whose issue code says which (FHIR value set issue-type)."""

from web.problems import BadRequest


class Refused(BadRequest):
    """A value the server cannot read: issue `invalid`."""
    issue = "invalid"


class Unsupported(Refused):
    """A parameter, modifier, sort key or value the server does not support: issue `not-supported`."""
    issue = "not-supported"
