-- The catalog: each SKU's unit price and its currency, published with the SKU on
-- checkout.catalog.<sku> so that the door can refuse a cart whose prices changed. Rows from
-- before prices existed get a placeholder price; seeding sets the real one.
ALTER TABLE inventory.stock
    ADD COLUMN price_cents bigint NOT NULL DEFAULT 1000 CHECK (price_cents >= 0),
    ADD COLUMN currency    text   NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$');
