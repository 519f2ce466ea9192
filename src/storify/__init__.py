"""storify: a store run from a local console, shopped over telnet and a framed-message API."""

from __future__ import annotations

from storify.api import ApiSession
from storify.cart import Cart
from storify.client import AsyncStoreClient, StoreClient
from storify.conditions import NetworkConditions
from storify.errors import (
    ApiError,
    BadFrame,
    BadRequest,
    CartFull,
    CartFullReply,
    DuplicateProduct,
    DuplicateProductReply,
    EmptyCart,
    EmptyCartReply,
    InvalidValue,
    InvalidValueReply,
    OrderNotFound,
    OrderNotFoundReply,
    OutOfStock,
    OutOfStockReply,
    RequestConflict,
    RequestConflictReply,
    SchemaTooNew,
    StoreBusy,
    StoreError,
    StoreUnavailable,
    StoreUnavailableReply,
    UnknownOperation,
    UnknownProduct,
    UnknownProductReply,
)
from storify.notice import Notices
from storify.records import Order, OrderLine, Product, Receipt
from storify.repl import CustomerREPL, Storefront, StoreREPL, Visitor
from storify.server import ApiServer
from storify.service import StoreService
from storify.shop import CustomerSession
from storify.simulate import SimulationResult, run_simulation, simulate
from storify.store import Store

__all__ = [
    "ApiError",
    "ApiServer",
    "ApiSession",
    "AsyncStoreClient",
    "BadFrame",
    "BadRequest",
    "Cart",
    "CartFull",
    "CartFullReply",
    "CustomerREPL",
    "CustomerSession",
    "DuplicateProduct",
    "DuplicateProductReply",
    "EmptyCart",
    "EmptyCartReply",
    "InvalidValue",
    "InvalidValueReply",
    "NetworkConditions",
    "Notices",
    "Order",
    "OrderLine",
    "OrderNotFound",
    "OrderNotFoundReply",
    "OutOfStock",
    "OutOfStockReply",
    "Product",
    "Receipt",
    "RequestConflict",
    "RequestConflictReply",
    "SchemaTooNew",
    "SimulationResult",
    "Store",
    "StoreBusy",
    "StoreClient",
    "StoreError",
    "StoreREPL",
    "StoreService",
    "StoreUnavailable",
    "StoreUnavailableReply",
    "Storefront",
    "UnknownOperation",
    "UnknownProduct",
    "UnknownProductReply",
    "Visitor",
    "run_simulation",
    "simulate",
]
