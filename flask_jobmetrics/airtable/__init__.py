"""Publishing the store's rows to Airtable: records, the publisher, the schema check."""
