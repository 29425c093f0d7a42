"""sansio/ratelimit."""
