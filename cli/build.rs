//! Places `trestle`'s start-up code together when it is linked (`link/startup.order`).

#[path = "../link/order.rs"]
mod order;

fn main() {
    order::link_in_order("trestle");
}
