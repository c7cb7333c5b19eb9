-- 003: owners' SSH public keys, put in root's authorized_keys of every node of their clusters.
-- Re-runnable (IF NOT EXISTS). public_key is the normalised line 'type base64 comment' (never a
-- private key: vc.sshkeys refuses those before anything is written). The fingerprint is
-- SHA256:<base64>, case-sensitive, hence ascii_bin; one owner holds a key once.
CREATE TABLE IF NOT EXISTS vcsshkey (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT,
  owner VARCHAR(64) NOT NULL,
  name VARCHAR(64) NOT NULL,
  key_type VARCHAR(64) NOT NULL,
  fingerprint VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  public_key TEXT NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY sshkey_owner_fingerprint (owner, fingerprint)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
