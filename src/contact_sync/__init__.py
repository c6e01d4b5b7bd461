"""contact_sync: the contacts core of a voice-AI calling CRM.

The public Python surface: the read module's query and page objects, and the
publisher that the call pipeline's Python side uses.
"""

from contact_sync.contacts.query import ContactPage, ContactQuery, EligiblePage, EligibleQuery

__all__ = ["ContactPage", "ContactQuery", "EligiblePage", "EligibleQuery"]
__version__ = "0.1.0"
