-- pgbench script: the reservation most shops write on Postgres, one hot SKU.
-- One statement: the conditional UPDATE of the SKU's row (held + 1 if a
-- unit is free) and, only if it took one, the INSERT of the hold; with
-- synchronous_commit on, each transaction is on disk when answered.
\set customer random(1, 1000000000)
WITH took AS (
  UPDATE skus SET held = held + 1
  WHERE sku = 'sku-000000' AND stock - held - sold >= 1
  RETURNING sku
)
INSERT INTO holds (sku, customer, qty, expires_at)
SELECT sku, :customer, 1, now() + interval '10 minutes' FROM took;
