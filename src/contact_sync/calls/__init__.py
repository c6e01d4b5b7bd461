"""The call.completed event and how it lands on a contact: model, merge, resolve, inbox, apply."""
