"""ORM models, one module per aggregate. Importing this package registers every table."""

from dtx_trials.models.allocations import (
    Allocation,
    RandomizationSiteCount,
    RandomizationState,
    RandomizationStratum,
)
from dtx_trials.models.analyses import AnalysisRun
from dtx_trials.models.apps import AppToken, ServiceCredential
from dtx_trials.models.audit import AuditChainHead, AuditEvent, KeyCheck
from dtx_trials.models.coding import CodedTerm, DictionaryTerm
from dtx_trials.models.devices import DeviceObservation
from dtx_trials.models.forms import DataQuery, FormRecord, Signature
from dtx_trials.models.notifications import Notification
from dtx_trials.models.participants import (
    Consent,
    ConsentInvitation,
    EproLink,
    Participant,
    ProtocolDeviation,
    Visit,
)
from dtx_trials.models.requests import IdempotentRequest
from dtx_trials.models.safety import SafetyEvent, SafetyFollowUp
from dtx_trials.models.trials import ProtocolVersion, Site, Trial
from dtx_trials.models.users import ApiToken, Membership, Role, User, WebSession

__all__ = [
    "Allocation",
    "AnalysisRun",
    "ApiToken",
    "AppToken",
    "AuditChainHead",
    "AuditEvent",
    "CodedTerm",
    "Consent",
    "ConsentInvitation",
    "DataQuery",
    "DeviceObservation",
    "DictionaryTerm",
    "EproLink",
    "FormRecord",
    "IdempotentRequest",
    "KeyCheck",
    "Membership",
    "Notification",
    "Participant",
    "ProtocolDeviation",
    "ProtocolVersion",
    "RandomizationSiteCount",
    "RandomizationState",
    "RandomizationStratum",
    "Role",
    "SafetyEvent",
    "SafetyFollowUp",
    "ServiceCredential",
    "Signature",
    "Site",
    "Trial",
    "User",
    "Visit",
    "WebSession",
]
