-- 002: the Rocks-compatible cluster DB (memberships, nodes, networks) that the builtin registrar
-- fills from an insert-ethers dump. Column names follow Rocks (2005-2009) so that tools written
-- for a Rocks frontend can read them. Re-runnable (IF NOT EXISTS, INSERT IGNORE).
-- insert-ethers refuses a duplicate MAC, a duplicate IP and a duplicate (appliance, rack, rank);
-- here the unique keys make that a fact of the database.

-- Appliance types a node can belong to. The dump's --appliance names a row here by Name.
CREATE TABLE IF NOT EXISTS memberships (
  ID INT NOT NULL AUTO_INCREMENT,
  Name VARCHAR(64) NOT NULL,
  Appliance VARCHAR(64) NOT NULL,
  Distribution VARCHAR(64) NOT NULL DEFAULT 'rocks-dist',
  Compute ENUM('yes', 'no') NOT NULL DEFAULT 'no',
  Public ENUM('yes', 'no') NOT NULL DEFAULT 'no',
  PRIMARY KEY (ID),
  UNIQUE KEY membership_name (Name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- 'Gateway' is the virtual frontend of a cluster (our name for the Rocks frontend appliance).
INSERT IGNORE INTO memberships (Name, Appliance, Distribution, Compute, Public) VALUES
  ('Gateway', 'gateway', 'rocks-dist', 'no', 'yes'),
  ('Compute', 'compute', 'rocks-dist', 'yes', 'no');

-- One row per node; Rack is the virtual cluster number, Rank the node index in it.
CREATE TABLE IF NOT EXISTS nodes (
  ID INT NOT NULL AUTO_INCREMENT,
  Name VARCHAR(128) NOT NULL,
  Membership INT NOT NULL,
  CPUs INT NOT NULL DEFAULT 1,
  Rack INT NOT NULL,
  `Rank` INT NOT NULL,
  Comment VARCHAR(255) NULL,
  PRIMARY KEY (ID),
  UNIQUE KEY node_name (Name),
  UNIQUE KEY node_slot (Membership, Rack, `Rank`),
  KEY by_rack (Rack),
  CONSTRAINT nodes_membership FOREIGN KEY (Membership) REFERENCES memberships (ID)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- One row per interface of a node (a dump line describes the node's private interface).
-- NULL MAC/IP are allowed (Rocks prints them as None) and never collide in a unique key.
CREATE TABLE IF NOT EXISTS networks (
  ID INT NOT NULL AUTO_INCREMENT,
  Node INT NOT NULL,
  MAC VARCHAR(64) NULL,
  IP VARCHAR(32) NULL,
  Netmask VARCHAR(32) NULL,
  Gateway VARCHAR(32) NULL,
  Name VARCHAR(128) NULL,
  Device VARCHAR(32) NULL,
  Module VARCHAR(128) NULL,
  Comment VARCHAR(255) NULL,
  PRIMARY KEY (ID),
  UNIQUE KEY network_mac (MAC),
  UNIQUE KEY network_ip (IP),
  KEY by_node (Node),
  CONSTRAINT networks_node FOREIGN KEY (Node) REFERENCES nodes (ID) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
