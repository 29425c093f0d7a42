"""sansio/sessions."""
