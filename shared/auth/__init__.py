"""Identity from JWTs: issued by the user service, verified by every service."""
