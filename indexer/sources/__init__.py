"""What an ingestion job reads: listing and parsing sources, allowed roots, URL fetching."""
