"""What happens while the server is away: the local spool file and its replay."""
