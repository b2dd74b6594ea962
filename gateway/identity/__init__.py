"""Who a request acts for: users and service accounts, our tokens and their keys,
trusted issuers, scopes."""
