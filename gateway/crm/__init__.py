"""The CRM: contacts, events, tickets and worklists, over the store."""
