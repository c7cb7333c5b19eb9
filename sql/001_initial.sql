-- 001: reservations, resources, iSCSI volumes, nodes, hosts, targets, events, allocations.
-- MariaDB/MySQL, InnoDB, utf8mb4. Every DATETIME is UTC. Statements are re-runnable
-- (IF NOT EXISTS) so a migration interrupted half-way can simply be applied again.

-- One row per reservation; rack is the virtual cluster number (Rocks rack of its nodes).
CREATE TABLE IF NOT EXISTS vcregist (
  rack INT UNSIGNED NOT NULL AUTO_INCREMENT,
  owner VARCHAR(64) NOT NULL,
  start_at DATETIME NOT NULL,
  end_at DATETIME NOT NULL,
  state VARCHAR(16) NOT NULL DEFAULT 'reserved',
  -- what the next tick (or vc_ctl) must do besides following the clock: 'delete' after a stop
  pending VARCHAR(16) NULL,
  error TEXT NULL,
  comment VARCHAR(255) NOT NULL DEFAULT '',
  created_at DATETIME NOT NULL,
  updated_at DATETIME NOT NULL,
  PRIMARY KEY (rack),
  KEY by_state_start (state, start_at),
  KEY by_state_end (state, end_at),
  KEY by_start (start_at),
  KEY by_owner (owner),
  CONSTRAINT vcregist_window CHECK (end_at >= start_at),
  CONSTRAINT vcregist_state CHECK (state IN
    ('reserved', 'starting', 'running', 'stopping', 'stopped', 'failed', 'deleting'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Per reservation and appliance: how many nodes and how big.
CREATE TABLE IF NOT EXISTS vcresource (
  rack INT UNSIGNED NOT NULL,
  appliance VARCHAR(16) NOT NULL,
  count INT UNSIGNED NOT NULL,
  memory_mb INT UNSIGNED NOT NULL,
  disk_gb INT UNSIGNED NOT NULL,
  vcpus INT UNSIGNED NOT NULL,
  PRIMARY KEY (rack, appliance),
  CONSTRAINT vcresource_rack FOREIGN KEY (rack) REFERENCES vcregist (rack) ON DELETE CASCADE,
  CONSTRAINT vcresource_appliance CHECK (appliance IN ('gateway', 'compute'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- iSCSI targets registered on the "iSCSI target setup" page (or vc_ctl target add).
CREATE TABLE IF NOT EXISTS vciscsitarget (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT,
  name VARCHAR(64) NOT NULL,
  address VARCHAR(255) NOT NULL,
  port SMALLINT UNSIGNED NOT NULL DEFAULT 22,
  ssh_user VARCHAR(64) NOT NULL DEFAULT 'root',
  iscsi_port SMALLINT UNSIGNED NOT NULL DEFAULT 3260,
  -- pinned only when an admin confirms it; NULL = never trusted yet
  host_key_fingerprint VARCHAR(128) NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY target_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- iSCSI volumes of a reservation. Only the appliance named here (the gateway, the virtual
-- frontend) attaches the LUN; it serves nfs_export to the other nodes, which mount it as clients.
CREATE TABLE IF NOT EXISTS vciscsi (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT,
  rack INT UNSIGNED NOT NULL,
  appliance VARCHAR(16) NOT NULL DEFAULT 'gateway',
  target_id INT UNSIGNED NOT NULL,
  mount_point VARCHAR(255) NOT NULL,
  size_gb INT UNSIGNED NOT NULL,
  iqn VARCHAR(223) NULL,
  lun SMALLINT UNSIGNED NULL,
  nfs_export VARCHAR(255) NULL,
  nfs_client_mount VARCHAR(255) NULL,
  state VARCHAR(16) NOT NULL DEFAULT 'planned',
  PRIMARY KEY (id),
  UNIQUE KEY volume_mount (rack, mount_point),
  KEY by_target (target_id),
  CONSTRAINT vciscsi_rack FOREIGN KEY (rack, appliance) REFERENCES vcresource (rack, appliance)
    ON DELETE CASCADE,
  CONSTRAINT vciscsi_target FOREIGN KEY (target_id) REFERENCES vciscsitarget (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Physical hosts (mirrors the [host:NAME] sections; the tick marks unreachable ones).
CREATE TABLE IF NOT EXISTS vchost (
  name VARCHAR(64) NOT NULL,
  uri VARCHAR(255) NOT NULL,
  memory_mb INT UNSIGNED NOT NULL,
  vcpus INT UNSIGNED NOT NULL,
  enabled TINYINT(1) NOT NULL DEFAULT 1,
  reachable TINYINT(1) NOT NULL DEFAULT 1,
  updated_at DATETIME NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- One row per VM of a started cluster.
CREATE TABLE IF NOT EXISTS vcnode (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT,
  rack INT UNSIGNED NOT NULL,
  appliance VARCHAR(16) NOT NULL,
  `rank` INT UNSIGNED NOT NULL,
  name VARCHAR(64) NOT NULL,
  mac CHAR(17) NOT NULL,
  ip VARCHAR(15) NOT NULL,
  public_ip VARCHAR(15) NULL,
  host VARCHAR(64) NULL,
  state VARCHAR(16) NOT NULL DEFAULT 'new',
  restarts INT UNSIGNED NOT NULL DEFAULT 0,
  updated_at DATETIME NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY node_slot (rack, appliance, `rank`),
  UNIQUE KEY node_name (name),
  UNIQUE KEY node_mac (mac),
  KEY by_host (host),
  CONSTRAINT vcnode_rack FOREIGN KEY (rack) REFERENCES vcregist (rack) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Live allocations. The primary key makes "no two starting/running clusters share a MAC, an IP,
-- a subnet or an isolation id" a fact of the database, not of a check in code. Rows are removed
-- when their cluster reaches 'stopped'.
CREATE TABLE IF NOT EXISTS vcalloc (
  kind VARCHAR(16) NOT NULL,
  value VARCHAR(64) NOT NULL,
  rack INT UNSIGNED NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (kind, value),
  KEY by_rack (rack),
  CONSTRAINT vcalloc_kind CHECK (kind IN ('mac', 'subnet', 'private_ip', 'public_ip', 'isolation'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Monotonic counters (the MAC counter: a MAC is never handed out twice) and the admission lock.
CREATE TABLE IF NOT EXISTS vccounter (
  name VARCHAR(32) NOT NULL,
  value BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- 'admission' is the row every admission locks first (serialises capacity decisions);
-- 'longest_seconds' is the longest window ever booked (bounds the overlap query).
INSERT IGNORE INTO vccounter (name, value) VALUES ('mac', 0), ('admission', 0), ('longest_seconds', 0);

-- Audit log: one row per state change and per notable action. No foreign key: it outlives the
-- reservation it describes.
CREATE TABLE IF NOT EXISTS vcevent (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  rack INT UNSIGNED NULL,
  at DATETIME(6) NOT NULL,
  actor VARCHAR(64) NOT NULL,
  from_state VARCHAR(16) NULL,
  to_state VARCHAR(16) NULL,
  reason TEXT NOT NULL,
  PRIMARY KEY (id),
  KEY by_rack (rack, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
