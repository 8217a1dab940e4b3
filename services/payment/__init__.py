"""payment: one wallet per user and the ledger of its top-ups, charges and refunds."""
