"""The entry service's side of the Encoder: its protocol, the client and call coalescing."""
