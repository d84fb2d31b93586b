"""The results database: schema (ORM) and engine set-up."""
