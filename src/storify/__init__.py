"""storify: a store run from a local console, shopped over telnet and a framed-message API."""

from __future__ import annotations

from storify.api import ApiSession
from storify.cart import Cart
from storify.client import ApiError, AsyncStoreClient, StoreClient
from storify.conditions import NetworkConditions
from storify.errors import (
    CartFull,
    DuplicateProduct,
    EmptyCart,
    InvalidValue,
    OrderNotFound,
    OutOfStock,
    RequestConflict,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
    UnknownProduct,
)
from storify.notice import Notices
from storify.repl import CustomerREPL, Storefront, StoreREPL, Visitor
from storify.server import ApiServer
from storify.service import StoreService
from storify.shop import CustomerSession
from storify.simulate import SimulationResult, run_simulation, simulate
from storify.store import Order, OrderLine, Product, Receipt, Store

__all__ = [
    "ApiError",
    "ApiServer",
    "ApiSession",
    "AsyncStoreClient",
    "Cart",
    "CartFull",
    "CustomerREPL",
    "CustomerSession",
    "DuplicateProduct",
    "EmptyCart",
    "InvalidValue",
    "NetworkConditions",
    "Notices",
    "Order",
    "OrderLine",
    "OrderNotFound",
    "OutOfStock",
    "Product",
    "Receipt",
    "RequestConflict",
    "SchemaTooNew",
    "SimulationResult",
    "Store",
    "StoreClient",
    "StoreError",
    "StoreREPL",
    "StoreService",
    "StoreUnavailable",
    "Storefront",
    "UnknownProduct",
    "Visitor",
    "run_simulation",
    "simulate",
]
