"""What only payment talks to: the payment provider, and the authorizer that asks it
before the transaction that books its answers."""
