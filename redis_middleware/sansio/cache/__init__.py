"""sansio/cache."""
