/**
 * The demo shop's customers and products. The monolith owns them (tables `customers`, `products`); the extracted
 * orders service keeps a read-only copy (`buyers`, `catalog_items`) to validate and price new orders without
 * calling back into the monolith. The demo seeds both from this one list, so the copy needs no sync; a real
 * migration would replicate them one way (legacy → service), see devstack/demo/README.md.
 */
export interface ReferenceCustomer {
  id: number;
  email: string;
  fullName: string;
}

export interface ReferenceProduct {
  id: number;
  sku: string;
  name: string;
  priceCents: number;
  stock: number;
}

export const REFERENCE_CUSTOMERS: readonly ReferenceCustomer[] = [
  { id: 1, email: 'ada.lovelace@example.com', fullName: 'Ada Lovelace' },
  { id: 2, email: 'grace.hopper@example.com', fullName: 'Grace Hopper' },
  { id: 3, email: 'alan.turing@example.com', fullName: 'Alan Turing' },
  { id: 4, email: 'katherine.johnson@example.com', fullName: 'Katherine Johnson' },
  { id: 5, email: 'edsger.dijkstra@example.com', fullName: 'Edsger Dijkstra' },
  { id: 6, email: 'barbara.liskov@example.com', fullName: 'Barbara Liskov' },
  { id: 7, email: 'donald.knuth@example.com', fullName: 'Donald Knuth' },
  { id: 8, email: 'frances.allen@example.com', fullName: 'Frances Allen' },
];

export const REFERENCE_PRODUCTS: readonly ReferenceProduct[] = [
  { id: 1, sku: 'MUG-001', name: 'Enamel mug', priceCents: 1299, stock: 140 },
  { id: 2, sku: 'TEE-002', name: 'Organic cotton T-shirt', priceCents: 2450, stock: 80 },
  { id: 3, sku: 'NB-003', name: 'Dot-grid notebook', priceCents: 899, stock: 300 },
  { id: 4, sku: 'PEN-004', name: 'Fountain pen', priceCents: 4900, stock: 45 },
  { id: 5, sku: 'BAG-005', name: 'Canvas tote bag', priceCents: 1750, stock: 120 },
  { id: 6, sku: 'CAP-006', name: 'Baseball cap', priceCents: 2199, stock: 60 },
  { id: 7, sku: 'STK-007', name: 'Sticker pack', priceCents: 350, stock: 1000 },
  { id: 8, sku: 'HOD-008', name: 'Zip hoodie', priceCents: 5995, stock: 35 },
  { id: 9, sku: 'BTL-009', name: 'Steel water bottle', priceCents: 2799, stock: 90 },
  { id: 10, sku: 'KEY-010', name: 'Mechanical keyboard', priceCents: 12900, stock: 12 },
  { id: 11, sku: 'SOK-011', name: 'Wool socks', priceCents: 1100, stock: 200 },
  { id: 12, sku: 'PST-012', name: 'Poster, A2', priceCents: 1500, stock: 75 },
];
