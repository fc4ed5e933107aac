"""Real servers the test suite starts on loopback (sshd, FTP/FTPS, faulty TCP peers)."""
